"""What both processes share: service plumbing, the hub API client, the engine client, the audit
log, profiles, stop reasons and the state volume's file names."""
