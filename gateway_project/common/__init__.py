"""The bottom layer: primitives every app may use. Imports only the standard library, Django and
third-party packages, never an app of this project."""
