//! The zadig surface through the real binary.
