//! hami-scheduler
