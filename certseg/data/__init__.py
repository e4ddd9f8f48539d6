"""Datasets: synthetic (embedded default), Cityscapes, Pascal-Context, generic image/mask folders."""
