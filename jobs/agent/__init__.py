"""The built-in coding agent (a tool-using loop over the Anthropic and OpenAI APIs, every tool run
inside the sandbox) and the translators of external agent CLIs' output into run events."""
