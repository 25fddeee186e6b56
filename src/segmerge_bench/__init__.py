"""segmerge's research harness: the built-in UDA benchmark and the demo.

Synthetic street-scene domains (``synthetic``), tiny MiT networks (``zoo``, with the shipped
checkpoints), their training (``training``) and the experiments (``benchmark``). It uses only
segmerge's public API, and plugs its dataset kind, its model loader and its commands
(``data``, ``demo``, ``bench``) into segmerge through entry points (:mod:`segmerge.plugins`);
segmerge itself never imports it (an import-linter contract, checked in CI).
"""
