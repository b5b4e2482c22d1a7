//! hami-bench
