"""MG-DARTS (multi-granularity differentiable architecture search) for mgas_bench."""
