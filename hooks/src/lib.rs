//! hami-hooks
