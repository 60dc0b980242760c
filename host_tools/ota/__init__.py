"""Over-the-air updates on the host: release keys, bundles, `edgectl update` and `config`."""
