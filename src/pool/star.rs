//! [`StarFn`]: the plain functions [`Pool::starmap`](crate::Pool::starmap) takes,
//! of one to four arguments, each called on a tuple of its arguments.

use serde::Serialize;
use serde::de::DeserializeOwned;

mod sealed {
    /// Only function pointers, whose address a task token may carry.
    pub trait Sealed: crate::sys::task::FnPtr {}
}

/// A plain function of one to four arguments, as [`Pool::starmap`](crate::Pool::starmap)
/// takes it: `fn(A) -> R`, `fn(A, B) -> R`, `fn(A, B, C) -> R` or
/// `fn(A, B, C, D) -> R`, called on a tuple `(A,)`, `(A, B)`, ... of serde
/// arguments (sealed: only these function pointer types).
///
/// A function item becomes such a pointer with `as fn(_, _) -> _` (one `_` per
/// argument): Rust cannot choose the arity of a generic parameter from a function
/// item alone.
///
/// ```
/// use multiproc::pool::StarFn;
/// fn add3(a: u8, b: u8, c: u8) -> u16 { u16::from(a) + u16::from(b) + u16::from(c) }
/// fn takes<F: StarFn>(_: F) {}
/// takes(add3 as fn(_, _, _) -> _);
/// ```
pub trait StarFn: Copy + 'static + sealed::Sealed {
    /// The tuple of the function's arguments.
    type Args: Serialize + DeserializeOwned + 'static;
    /// The function's result.
    type Output: Serialize + DeserializeOwned + 'static;
    /// Calls the function on a tuple of its arguments.
    ///
    /// ```
    /// use multiproc::pool::StarFn;
    /// fn sub(a: i32, b: i32) -> i32 { a - b }
    /// assert_eq!((sub as fn(_, _) -> _).call((5, 3)), 2);
    /// ```
    fn call(self, args: Self::Args) -> Self::Output;
}

macro_rules! star_fn {
    ($($a:ident),+) => {
        impl<$($a,)+ R> sealed::Sealed for fn($($a),+) -> R
        where
            $($a: Serialize + DeserializeOwned + 'static,)+
            R: Serialize + DeserializeOwned + 'static,
        {
        }
        impl<$($a,)+ R> StarFn for fn($($a),+) -> R
        where
            $($a: Serialize + DeserializeOwned + 'static,)+
            R: Serialize + DeserializeOwned + 'static,
        {
            type Args = ($($a,)+);
            type Output = R;
            #[allow(non_snake_case)]
            fn call(self, ($($a,)+): ($($a,)+)) -> R {
                self($($a),+)
            }
        }
    };
}
star_fn!(A);
star_fn!(A, B);
star_fn!(A, B, C);
star_fn!(A, B, C, D);
