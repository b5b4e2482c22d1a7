//! Symbol resolution: the `dlsym` export, the driver libraries, and the registries of wrapped
//! entry points that map a real driver address to the wrapper of exactly that ABI variant.

pub mod dlsym;
pub mod library;
pub mod registry;
