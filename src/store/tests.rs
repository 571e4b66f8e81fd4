//! The store in-process: a real sled in a temp dir, no sockets.
