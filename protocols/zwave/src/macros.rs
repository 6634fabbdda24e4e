//! `byte_enum!`: a one-byte code with names for the values the crate knows and `Other(u8)`
//! for the rest, so that decoding never fails on a value added by a later spec.

macro_rules! byte_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
        #[serde(rename_all = "snake_case")]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value without a name here (decoded as is, encoded back unchanged).
            Other(u8),
        }

        impl $name {
            pub fn from_byte(b: u8) -> Self {
                match b {
                    $( $value => Self::$variant, )+
                    other => Self::Other(other),
                }
            }

            pub fn to_byte(self) -> u8 {
                match self {
                    $( Self::$variant => $value, )+
                    Self::Other(b) => b,
                }
            }
        }

        impl From<u8> for $name {
            fn from(b: u8) -> Self {
                Self::from_byte(b)
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v.to_byte()
            }
        }
    };
}

pub(crate) use byte_enum;
