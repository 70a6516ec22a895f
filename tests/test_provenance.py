"""redi.provenance: package versions, the checkout's commit and dirtiness, the device."""

from __future__ import annotations

import subprocess

import torch

from redi import provenance


def test_package_versions():
    versions = provenance.package_versions(("torch", "surely-not-installed-xyz"))
    assert versions == {"torch": torch.__version__, "surely-not-installed-xyz": None}


def test_code_version_is_the_checkout_head():
    head = subprocess.run(["git", "-C", str(provenance.ROOT), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert provenance.code_version()["commit"] == head


def test_outside_git(monkeypatch, tmp_path):
    monkeypatch.setattr(provenance, "ROOT", tmp_path)  # not a repository
    provenance.code_version.cache_clear()
    try:
        assert provenance.code_version() == {"commit": None, "dirty": None}
    finally:
        provenance.code_version.cache_clear()


def test_device():
    device = provenance.device_description()
    assert device["type"] == ("cuda" if torch.cuda.is_available() else "cpu")
