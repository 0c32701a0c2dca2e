//! The built-in agent catalog (`src/catalog/builtin.toml`) is parsed here,
//! once, at build time, and embedded as JSON, which kennel reads several
//! times faster than TOML on every command that loads the catalog. A
//! catalog that does not parse fails the build.

fn main() {
    let source = "src/catalog/builtin.toml";
    println!("cargo::rerun-if-changed={source}");
    let text = std::fs::read_to_string(source)
        .unwrap_or_else(|error| panic!("cannot read {source}: {error}"));
    let value: toml::Value =
        toml::from_str(&text).unwrap_or_else(|error| panic!("{source} does not parse: {error}"));
    let json =
        serde_json::to_string(&value).unwrap_or_else(|error| panic!("{source} as JSON: {error}"));
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("builtin-catalog.json"), json)
        .unwrap_or_else(|error| panic!("cannot write the catalog: {error}"));
}
