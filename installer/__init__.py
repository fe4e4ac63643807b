"""Installer and cluster bootstrapper for an on-prem ML platform."""

__version__ = "0.1.0"
