"""NNI's one-shot NAS strategies as mgas_bench methods (entry point ``nni``)."""
