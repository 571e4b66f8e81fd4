//! The layers an account's settings come from (the named account, the top level of
//! `channels.sms`, the environment), and how a key is named in messages by the layer
//! that set it. Below both `sms` (which builds them) and `account` (which reads them).

use super::super::raw::{Field, RawAccount};
use super::env::env_name;
use super::{Env, SMS};

/// One layer of account settings, with how to name its keys in messages.
pub(super) struct Layer<'a> {
    pub(super) raw: &'a RawAccount,
    pub(super) origin: Origin,
}

#[derive(Clone)]
pub(super) enum Origin {
    Named(String),
    Top,
    Env,
}

pub(super) struct Layers<'a> {
    pub(super) layers: Vec<Layer<'a>>,
    pub(super) env: &'a Env,
}

impl<'a> Layers<'a> {
    fn path(&self, origin: &Origin, key: &str) -> String {
        match origin {
            Origin::Named(id) => format!("{SMS}.accounts.{id}.{key}"),
            Origin::Top => format!("{SMS}.{key}"),
            Origin::Env => format!("environment variable {}", env_name(key, self.env)),
        }
    }

    /// The first layer that sets `key`, and the path to name it by.
    pub(super) fn get<T: 'a>(
        &self,
        key: &str,
        f: impl Fn(&'a RawAccount) -> &'a Option<Field<T>>,
    ) -> (&'a Option<Field<T>>, String) {
        for layer in &self.layers {
            let v = f(layer.raw);
            if v.is_some() {
                return (v, self.path(&layer.origin, key));
            }
        }
        let first = self
            .layers
            .first()
            .map_or(Origin::Top, |l| l.origin.clone());
        (&None, self.path(&first, key))
    }
}
