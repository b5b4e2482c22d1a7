//! hami-fakegpu
