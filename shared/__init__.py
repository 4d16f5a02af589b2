"""What Alice and Bob both run: core < coding < (protocol/) < app < show; see docs/architecture.md."""
