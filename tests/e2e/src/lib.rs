//! hami-e2e
