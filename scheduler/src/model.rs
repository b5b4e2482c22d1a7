//! Device models (GPU types) interned to small ids, and sets of them as bit masks.
//!
//! A type constraint is checked once per node per decision, so it must cost one AND;
//! interning the model names gives every model a bit.

use thiserror::Error;

/// Index of a model in a [`ModelTable`].
pub type ModelId = u8;

/// The most distinct device models one table holds (one bit each in a [`ModelSet`]).
pub const MAX_MODELS: usize = 64;

/// Errors raised while interning model names.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("more than {MAX_MODELS} distinct device models")]
    TooMany,
}

/// Interns model names such as `V100M16` or `NVIDIA A10`.
#[derive(Debug, Default, Clone)]
pub struct ModelTable {
    names: Vec<String>,
}

impl ModelTable {
    /// The id of `name`, adding it when new.
    pub fn intern(&mut self, name: &str) -> Result<ModelId, ModelError> {
        if let Some(id) = self.lookup(name) {
            return Ok(id);
        }
        if self.names.len() >= MAX_MODELS {
            return Err(ModelError::TooMany);
        }
        self.names.push(name.to_owned());
        Ok(ModelId::try_from(self.names.len() - 1).unwrap_or(ModelId::MAX))
    }

    /// The id of `name` if it was interned.
    pub fn lookup(&self, name: &str) -> Option<ModelId> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| ModelId::try_from(i).ok())
    }

    /// The name of a model id.
    pub fn name(&self, id: ModelId) -> &str {
        self.names.get(usize::from(id)).map_or("", String::as_str)
    }

    /// Every interned name, in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// A set of models; [`ModelSet::ANY`] means no constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelSet(u64);

impl ModelSet {
    /// Every model allowed.
    pub const ANY: ModelSet = ModelSet(u64::MAX);
    /// No model allowed.
    pub const NONE: ModelSet = ModelSet(0);

    /// The set holding only `id`.
    pub fn only(id: ModelId) -> Self {
        ModelSet(1u64 << (id % 64))
    }

    /// Adds `id` to the set.
    pub fn with(self, id: ModelId) -> Self {
        ModelSet(self.0 | Self::only(id).0)
    }

    /// The set minus `id`.
    pub fn without(self, id: ModelId) -> Self {
        ModelSet(self.0 & !Self::only(id).0)
    }

    /// Whether `id` is allowed.
    pub fn contains(self, id: ModelId) -> bool {
        self.0 & Self::only(id).0 != 0
    }

    /// Whether this is the unconstrained set.
    pub fn is_any(self) -> bool {
        self == Self::ANY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_sets_match_members() {
        let mut table = ModelTable::default();
        let a = table.intern("T4").unwrap();
        let b = table.intern("V100M32").unwrap();
        assert_eq!(table.intern("T4").unwrap(), a);
        assert_eq!(table.name(b), "V100M32");
        let set = ModelSet::NONE.with(b);
        assert!(set.contains(b));
        assert!(!set.contains(a));
        assert!(ModelSet::ANY.without(a).contains(b));
        assert!(!ModelSet::ANY.without(a).contains(a));
    }

    #[test]
    fn table_refuses_the_sixty_fifth_model() {
        let mut table = ModelTable::default();
        for i in 0..MAX_MODELS {
            table.intern(&format!("m{i}")).unwrap();
        }
        assert_eq!(table.intern("one-more"), Err(ModelError::TooMany));
    }
}
