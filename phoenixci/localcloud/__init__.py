"""The local cloud: the AWS API (moto, in-process, IAM enforced) and, later, real instances."""
