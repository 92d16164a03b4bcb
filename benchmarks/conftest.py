import torch

# One thread, as in the table script and the tests: on this 2-core machine a second
# thread mostly measures contention with whatever else runs.
torch.set_num_threads(1)
