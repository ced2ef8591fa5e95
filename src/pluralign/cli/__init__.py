"""Command-line interface (`pluralign ...`)."""
