fn main() {
    println!("consumer-app: not built yet");
}
