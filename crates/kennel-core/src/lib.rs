//! kennel-core: configuration, the agent catalog, settings resolution and the
//! Plan. Nothing here talks to an engine or prints.

pub mod plan;

pub use plan::Plan;
