//! The apigee surface through the real binary.
