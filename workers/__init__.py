"""arq workers: thin job functions over ``app`` services."""
