//! Packed-weight format v1 (see `docs/FORMAT.md`).
