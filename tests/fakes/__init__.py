"""Stand-ins for outside services, faithful where our code depends on their behaviour."""
