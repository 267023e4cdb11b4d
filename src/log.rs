//! Logging that costs nothing unless asked for: with the `defmt` feature the macros forward to
//! `defmt`, without it they expand to nothing (the arguments are still type-checked).

#[cfg(feature = "defmt")]
macro_rules! debug {
    ($($arg:tt)*) => { defmt::debug!($($arg)*) };
}
#[cfg(not(feature = "defmt"))]
macro_rules! debug {
    ($($arg:tt)*) => {{ if false { let _ = ($($arg)*); } }};
}

#[cfg(feature = "defmt")]
macro_rules! warn {
    ($($arg:tt)*) => { defmt::warn!($($arg)*) };
}
#[cfg(not(feature = "defmt"))]
macro_rules! warn {
    ($($arg:tt)*) => {{ if false { let _ = ($($arg)*); } }};
}
