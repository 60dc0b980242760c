"""Backend: broker launcher, collector, consent, provisioning, fault proxy."""
