pub mod agents;
pub mod completions;
pub mod config;
pub mod doctor;
pub mod image;
pub mod ls;
pub mod net;
pub mod run;
