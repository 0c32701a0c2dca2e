//! A recipe's Dockerfile as steps, for backends that build images without
//! a Docker builder (Incus: launch the base, run each step in it, publish).
//!
//! Only what kennel's own recipes use is understood — `FROM`, `COPY` from
//! the recipe's files, `RUN` (shell form) and `ENV` — and anything else is
//! refused by name, so that a recipe never builds into something other
//! than what Docker would make of it.

use std::collections::BTreeMap;

use crate::Recipe;

/// One instruction of a recipe, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The image the recipe builds on.
    From(String),
    /// Files of the recipe ([`Recipe::files`]) at `target` in the image:
    /// one file, or (a `source` ending in `/`) a directory's files under
    /// the `target` directory.
    Copy { source: String, target: String },
    /// A command for `/bin/sh -c`, with the environment so far.
    Run(String),
    /// Variables for every later step and for the image, in order; values
    /// may name earlier ones (`$PATH`), see [`expand`].
    Env(Vec<(String, String)>),
    /// `USER root`: the steps run as root (the only user understood).
    Root,
}

/// Why a recipe cannot be read as steps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the recipe for {tag}: {reason}")]
pub struct StepError {
    pub tag: String,
    pub line: usize,
    pub reason: String,
}

impl Recipe {
    /// The recipe's instructions as [`Step`]s.
    /// The image the recipe builds on (its `FROM`).
    pub fn base(&self) -> Option<String> {
        match self.steps().ok()?.into_iter().next() {
            Some(Step::From(base)) => Some(base),
            _ => None,
        }
    }

    pub fn steps(&self) -> Result<Vec<Step>, StepError> {
        let fail = |line: usize, reason: String| StepError {
            tag: self.tag.clone(),
            line,
            reason,
        };
        let mut steps = Vec::new();
        for (line, instruction) in logical_lines(&self.dockerfile) {
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .map(|(keyword, rest)| (keyword, rest.trim()))
                .unwrap_or((instruction.as_str(), ""));
            let step = match keyword.to_ascii_uppercase().as_str() {
                "FROM" if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                    Step::From(rest.to_string())
                }
                "COPY" => match rest.split_whitespace().collect::<Vec<_>>()[..] {
                    [source, target] if !source.starts_with("--") => Step::Copy {
                        source: source.to_string(),
                        target: target.to_string(),
                    },
                    _ => {
                        return Err(fail(
                            line,
                            format!("`COPY {rest}`: only `COPY SOURCE TARGET` is understood"),
                        ));
                    }
                },
                "RUN" if !rest.is_empty() && !rest.starts_with('[') => Step::Run(rest.to_string()),
                "ENV" => Step::Env(env_pairs(rest).map_err(|reason| fail(line, reason))?),
                "USER" if rest == "root" => Step::Root,
                _ => {
                    return Err(fail(
                        line,
                        format!(
                            "`{keyword}` is not understood here (only FROM, COPY, RUN in shell form and ENV)"
                        ),
                    ));
                }
            };
            steps.push(step);
        }
        if !matches!(steps.first(), Some(Step::From(_))) {
            return Err(fail(1, "the recipe does not start with FROM".into()));
        }
        if steps
            .iter()
            .skip(1)
            .any(|step| matches!(step, Step::From(_)))
        {
            return Err(fail(
                1,
                "more than one FROM (stages) is not understood here".into(),
            ));
        }
        Ok(steps)
    }

    /// The files a `COPY source target` step puts in the image: each one's
    /// path in the image and its content.
    pub fn files_for_copy(&self, source: &str, target: &str) -> Vec<(String, &[u8])> {
        let source = source.trim_start_matches("./");
        match source.strip_suffix('/') {
            Some(dir) => {
                let prefix = format!("{dir}/");
                let target = target.trim_end_matches('/');
                self.files
                    .iter()
                    .filter_map(|(name, content)| {
                        let rest = name.strip_prefix(&prefix)?;
                        Some((format!("{target}/{rest}"), content.as_slice()))
                    })
                    .collect()
            }
            None => self
                .files
                .get(source)
                .map(|content| {
                    let path = match target.strip_suffix('/') {
                        Some(dir) => {
                            format!("{dir}/{}", source.rsplit('/').next().unwrap_or(source))
                        }
                        None => target.to_string(),
                    };
                    vec![(path, content.as_slice())]
                })
                .unwrap_or_default(),
        }
    }
}

/// The Dockerfile's instructions with their first line number: comments
/// and blank lines dropped, `\` continuations joined.
pub(crate) fn logical_lines(dockerfile: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in dockerfile.lines().enumerate() {
        let trimmed = line.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let (start, mut text) = current.take().unwrap_or((index + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                text.push_str(part);
                text.push(' ');
                current = Some((start, text));
            }
            None => {
                text.push_str(trimmed);
                out.push((start, text));
            }
        }
    }
    if let Some(last) = current {
        out.push(last);
    }
    out
}

/// A variable's name as Dockerfiles write them.
pub(crate) fn is_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `LABEL key=value "key 2"="value 2"`: keys may have dots and dashes.
pub(crate) fn label_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = match rest.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').ok_or("an unclosed quote")?;
                (
                    &quoted[..end],
                    quoted[end + 1..]
                        .strip_prefix('=')
                        .ok_or("expected KEY=VALUE")?,
                )
            }
            None => rest
                .split_once('=')
                .ok_or_else(|| format!("`LABEL {text}`: expected KEY=VALUE"))?,
        };
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"').ok_or("an unclosed quote")?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        pairs.push((key.to_string(), value.to_string()));
        rest = after.trim_start();
    }
    Ok(pairs)
}

/// `KEY=VALUE KEY2="VALUE 2"` as pairs.
pub(crate) fn env_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            return Err(format!("`ENV {text}`: only KEY=VALUE pairs are understood"));
        };
        if !is_name(key) {
            return Err(format!("`ENV {text}`: `{key}` is not a variable name"));
        }
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted
                    .find('"')
                    .ok_or_else(|| format!("`ENV {text}`: an unclosed quote"))?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(char::is_whitespace).unwrap_or((after, "")),
        };
        pairs.push((key.to_string(), value.to_string()));
        rest = after.trim_start();
    }
    Ok(pairs)
}

/// `text` with `$NAME` and `${NAME}` replaced by their values in `env`
/// (empty when unset), as Docker expands `ENV` values.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&next) = chars.peek() {
            if next.is_ascii_alphanumeric() || next == '_' {
                name.push(next);
                chars.next();
            } else {
                break;
            }
        }
        if braced {
            // `${NAME:-default}` and `${NAME:+alternative}`.
            let mut modifier = None;
            if chars.peek() == Some(&':') {
                let mut lookahead = chars.clone();
                lookahead.next();
                if let Some(kind @ ('-' | '+')) = lookahead.next() {
                    let mut word = String::new();
                    let mut closed = false;
                    for next in lookahead.by_ref() {
                        if next == '}' {
                            closed = true;
                            break;
                        }
                        word.push(next);
                    }
                    if closed {
                        chars = lookahead;
                        modifier = Some((kind, word));
                    }
                }
            }
            match modifier {
                Some((kind, word)) => {
                    let value = env.get(&name).filter(|value| !value.is_empty());
                    match (kind, value) {
                        ('-', Some(value)) => out.push_str(value),
                        ('-', None) => out.push_str(&expand(&word, env)),
                        (_, Some(_)) => out.push_str(&expand(&word, env)),
                        (_, None) => {}
                    }
                    continue;
                }
                None if chars.peek() == Some(&'}') => {
                    chars.next();
                }
                None => {
                    out.push_str("${");
                    out.push_str(&name);
                    continue;
                }
            }
        }
        if name.is_empty() {
            out.push('$');
            continue;
        }
        out.push_str(env.get(&name).map(String::as_str).unwrap_or(""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ImageSettings, recipes_for};
    use kennel_core::catalog::Catalog;

    fn settings() -> ImageSettings {
        ImageSettings {
            base_image: "kennel-test/bookworm:latest".into(),
            ca_certificates: vec![("corp.crt".into(), b"-----BEGIN CERTIFICATE-----".to_vec())],
            packages: Vec::new(),
            setup: None,
        }
    }

    /// Every built-in agent's recipes read as steps: kennel's own recipes
    /// use nothing an Incus build would not understand.
    #[test]
    fn every_built_in_recipe_reads_as_steps() {
        let catalog = Catalog::builtin().expect("catalog");
        for agent in catalog.agents() {
            for recipe in recipes_for(agent, &settings()) {
                let steps = recipe.steps().unwrap_or_else(|error| panic!("{error}"));
                assert!(matches!(&steps[0], Step::From(_)), "{}", recipe.tag);
                for step in &steps {
                    if let Step::Copy { source, target } = step {
                        assert!(
                            !recipe.files_for_copy(source, target).is_empty(),
                            "{}: COPY {source} {target} copies nothing",
                            recipe.tag
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_base_recipe_as_steps() {
        let catalog = Catalog::builtin().expect("catalog");
        let recipes = recipes_for(catalog.get("shell").expect("shell"), &settings());
        let steps = recipes[0].steps().expect("steps");
        assert_eq!(steps[0], Step::From("kennel-test/bookworm:latest".into()));
        assert_eq!(steps[1], Step::Root);
        let Step::Copy { source, target } = &steps[2] else {
            panic!("{steps:?}");
        };
        let copied = recipes[0].files_for_copy(source, target);
        let names: Vec<&str> = copied.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            names,
            [
                "/usr/local/share/ca-certificates/kennel/.keep",
                "/usr/local/share/ca-certificates/kennel/corp.crt"
            ]
        );
        assert!(matches!(&steps[3], Step::Run(command) if command.contains("apt-get install")));
        let Step::Env(pairs) = &steps[4] else {
            panic!("{steps:?}");
        };
        assert_eq!(pairs[0], ("LANG".into(), "C.UTF-8".into()));
        assert_eq!(pairs.len(), 6);
    }

    #[test]
    fn what_is_not_understood_is_refused_by_line() {
        let mut recipe = recipes_for(
            Catalog::builtin()
                .expect("catalog")
                .get("shell")
                .expect("shell"),
            &settings(),
        )
        .remove(0);
        recipe.dockerfile = "FROM a\n# note\nRUN true\nUSER nobody\n".into();
        let error = recipe.steps().expect_err("USER");
        assert_eq!(error.line, 4);
        assert!(error.reason.contains("`USER`"), "{error}");
        recipe.dockerfile = "RUN true\n".into();
        assert!(recipe.steps().is_err());
        recipe.dockerfile = "FROM a AS b\n".into();
        assert!(recipe.steps().is_err());
        recipe.dockerfile = "FROM a\nRUN [\"true\"]\n".into();
        assert!(recipe.steps().is_err());
    }

    #[test]
    fn env_values_expand_like_docker() {
        let env: BTreeMap<String, String> =
            [("PATH".to_string(), "/usr/bin:/bin".to_string())].into();
        assert_eq!(expand("/opt/x/bin:$PATH", &env), "/opt/x/bin:/usr/bin:/bin");
        assert_eq!(expand("${PATH}:/y", &env), "/usr/bin:/bin:/y");
        assert_eq!(expand("$UNSET-a $ b ${", &env), "-a $ b ${");
        assert_eq!(
            expand("${UNSET:-x$PATH}|${PATH:+set}|${UNSET:+no}", &env),
            "x/usr/bin:/bin|set|"
        );
        assert_eq!(
            env_pairs("A=1 B=\"two words\"  C=$PATH").expect("pairs"),
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "two words".to_string()),
                ("C".to_string(), "$PATH".to_string())
            ]
        );
        assert!(env_pairs("A").is_err());
        assert!(env_pairs("A-B=1").is_err());
    }
}
