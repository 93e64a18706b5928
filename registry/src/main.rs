fn main() {
    println!("registry: not built yet");
}
