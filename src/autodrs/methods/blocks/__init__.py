"""Interaction functions and block architectures: SIF and AutoFeature (a function per
pair), AutoCTR and AutoPI (block DAGs), and AIM (pairs, functions and dims jointly).
Importing this package registers its methods."""

from autodrs.methods.blocks import aim, autoctr, autofeature, autopi, sif

__all__ = ["aim", "autoctr", "autofeature", "autopi", "sif"]
