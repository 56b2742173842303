//! The webhooks surface through the real binary.
