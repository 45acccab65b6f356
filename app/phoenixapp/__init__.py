"""phoenixapp: the dummy web application that the phoenixci pipeline tests, packages and deploys."""
