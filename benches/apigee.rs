//! The Apigee statistics benchmark (written in the next commit).

fn main() {}
