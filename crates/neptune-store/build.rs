//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds
//! the files it finds, and Cargo tracks only the files it was given.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
