//! The `settings!` macro: one declaration per setting, from which the typed settings, their
//! defaults, their parsing and their documentation all follow.

/// One declared setting, as the loaders and the documentation see it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable; its lower-case form is the configuration file's key.
    pub var: &'static str,
    /// Default value, as it would be written.
    pub default: &'static str,
    /// Default as the documentation shows it (`required`, `16 MiB`, ...).
    pub shown: &'static str,
    /// Section of the settings it belongs to (the field of `Settings` holding it; empty for
    /// the top level).
    pub group: &'static str,
    /// What the setting does, for operators: the declaration's doc comment, one line each.
    pub help: &'static str,
}

impl Setting {
    /// The configuration file's key for this setting.
    pub fn key(&self) -> String {
        self.var.to_ascii_lowercase()
    }

    /// The help text as one paragraph.
    pub fn help_paragraph(&self) -> String {
        self.help
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Declares the settings: a top-level struct, fields derived from the parsed settings, and
/// groups (sub-structs) of settings. Each setting is written once as
///
/// ```text
/// /// Help for operators (also the field's doc comment).
/// field: Type = "VARIABLE", "default" ("shown default")?, parser;
/// ```
///
/// where `parser` is an expression callable as `parser("VARIABLE", value) -> Result<Type, _>`.
/// The macro generates the structs, `SETTINGS` (every setting in order) and
/// `Top::parse(&RawSettings)`, which parses every value and then computes each derived field
/// with its function, in order.
macro_rules! settings {
    (
        $(#[doc = $tdoc:literal])*
        pub struct $Top:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $var:literal, $default:literal $(($shown:literal))?, $parse:expr;
            )*
        }
        derived {
            $(
                $(#[doc = $ddoc:literal])*
                $dfield:ident : $dty:ty = $derive:path;
            )*
        }
        $(
            $(#[doc = $gdoc:literal])*
            $gfield:ident : pub struct $Group:ident {
                $(
                    $(#[doc = $gfdoc:literal])*
                    $gf:ident : $gty:ty = $gvar:literal, $gdefault:literal $(($gshown:literal))?, $gparse:expr;
                )*
            }
        )*
    ) => {
        $(#[doc = $tdoc])*
        #[derive(Debug, Clone)]
        pub struct $Top {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $( $(#[doc = $ddoc])* pub $dfield: $dty, )*
            $( $(#[doc = $gdoc])* pub $gfield: $Group, )*
        }

        $(
            $(#[doc = $gdoc])*
            #[derive(Debug, Clone, PartialEq)]
            pub struct $Group {
                $( $(#[doc = $gfdoc])* pub $gf: $gty, )*
            }
        )*

        /// Every setting, in declaration order.
        pub const SETTINGS: &[$crate::config::declare::Setting] = &[
            $(
                $crate::config::declare::Setting {
                    var: $var,
                    default: $default,
                    shown: settings!(@shown $default $(, $shown)?),
                    group: "",
                    help: concat!($($doc, "\n"),*),
                },
            )*
            $($(
                $crate::config::declare::Setting {
                    var: $gvar,
                    default: $gdefault,
                    shown: settings!(@shown $gdefault $(, $gshown)?),
                    group: stringify!($gfield),
                    help: concat!($($gfdoc, "\n"),*),
                },
            )*)*
        ];

        /// Doc comment of each group of settings, by the field holding it.
        pub const GROUPS: &[(&str, &str)] = &[
            $( (stringify!($gfield), concat!($($gdoc, "\n"),*)), )*
        ];

        impl $Top {
            /// Parses every value, then computes the derived fields.
            fn parse(raw: &RawSettings) -> Result<$Top, ConfigError> {
                let mut settings = $Top {
                    $( $field: ($parse)($var, raw.get($var))?, )*
                    $( $dfield: Default::default(), )*
                    $( $gfield: $Group {
                        $( $gf: ($gparse)($gvar, raw.get($gvar))?, )*
                    }, )*
                };
                $( settings.$dfield = $derive(&settings, raw)?; )*
                Ok(settings)
            }
        }
    };
    (@shown $default:literal) => { $default };
    (@shown $default:literal, $shown:literal) => { $shown };
}

pub(crate) use settings;
