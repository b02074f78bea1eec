//! Model → configuration text with minijinja and marathon-lb's `{placeholder}` templates.
//! Owns the template loader (user directory, then environment, then embedded defaults from
//! `templates/`); reads template files, never writes anything.

use anyhow::Result;

use crate::config::RenderConfig;
use crate::model::Model;

/// A companion file written next to the config (the `--haproxy-map` files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFile {
    /// File name inside the config's directory, e.g. `domain2backend.map`.
    pub file_name: String,
    pub content: String,
}

/// The rendered candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub config: String,
    /// Present (possibly empty) exactly when `--haproxy-map` is on.
    pub maps: Vec<MapFile>,
}

/// Every template section resolved to its source: label overrides are per service and looked up
/// at render time.
#[derive(Debug, Clone, Default)]
pub struct Templates {}

impl Templates {
    /// Loads the sections: `HAPROXY_<NAME>` environment values, then files in the templates
    /// directory, then the embedded defaults.
    pub fn load(config: &RenderConfig) -> Result<Templates> {
        let _ = config;
        Ok(Templates {})
    }
}

/// Renders the model into the candidate config and map files.
pub fn render(model: &Model, templates: &Templates, config: &RenderConfig) -> Result<Rendered> {
    let _ = (model, templates, config);
    anyhow::bail!("render not implemented yet")
}
