"""Domain events written in the transaction of the change, and their catalog."""
