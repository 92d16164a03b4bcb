"""DARTS (Liu et al., ICLR 2019): operation set, genotype format and evaluation networks."""
