//! The circleci surface through the real binary.
