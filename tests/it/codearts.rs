//! The codearts surface through the real binary.
