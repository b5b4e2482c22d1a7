//! hami-ledger
