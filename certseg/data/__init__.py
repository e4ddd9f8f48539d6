"""Datasets: synthetic (embedded default), Cityscapes, Pascal-Context, image/mask folders."""
