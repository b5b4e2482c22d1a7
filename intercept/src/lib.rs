//! hami-intercept
