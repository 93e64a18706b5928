fn main() {
    println!("broker: not built yet");
}
