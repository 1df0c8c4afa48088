exports.onOpen = function()  {
  console.log("Connection openned.");
}

exports.onMessage = function(message) {
  console.log("Message received: " + message);
}

exports.onError = function(error) {
  console.error("Error: " + error);
}

exports.onClose = function() {
  console.warn("Connection closed.");
}
