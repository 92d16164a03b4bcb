"""Built-in plugins of mgas_bench."""
