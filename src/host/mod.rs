//! The privileged boundary: user lookup, reading users' files, PTYs, spawning as a user.
//!
//! (Being written.)
