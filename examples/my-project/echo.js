// A string returned by onMessage is sent back to the session it came from.
exports.onMessage = function (message) {
  return message;
};
