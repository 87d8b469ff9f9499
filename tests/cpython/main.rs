mod test_array;
mod test_shared_memory;
mod test_value;
